"""`python -m src.serve`: the command stays where users type it; the code is src/teacher/serve.py."""

from src.teacher.serve import main

if __name__ == "__main__":
    main()
