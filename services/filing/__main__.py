"""``python -m services.filing``: run the filing service until SIGTERM."""

from services.filing.app import build


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
