"""``python -m apt_viz IMAGE ...`` == ``apt-viz IMAGE ...``."""
from .cli import main

if __name__ == "__main__":
    main()
