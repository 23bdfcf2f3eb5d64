"""``python -m services.eligibility``: run the eligibility service until SIGTERM."""

from services.eligibility.app import build


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
