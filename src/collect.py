"""`python -m src.collect`: the command stays where users type it; the code is src/teacher/collect.py."""

from src.teacher.collect import main

if __name__ == "__main__":
    main()
