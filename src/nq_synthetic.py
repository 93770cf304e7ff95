"""`python -m src.nq_synthetic`: the command stays where users type it; the code is src/teacher/nq_synthetic.py."""

from src.teacher.nq_synthetic import main

if __name__ == "__main__":
    main()
