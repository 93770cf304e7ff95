"""`python -m src.demo_data`: the command stays where users type it; the code is src/teacher/demo_data.py."""

from src.teacher.demo_data import main

if __name__ == "__main__":
    main()
