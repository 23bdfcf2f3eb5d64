"""``python -m services.pricing``: run the pricing service until SIGTERM."""

from services.pricing.app import build


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
