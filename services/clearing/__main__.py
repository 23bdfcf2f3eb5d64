"""``python -m services.clearing``: run the clearing service until SIGTERM."""

from services.clearing.app import build


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
