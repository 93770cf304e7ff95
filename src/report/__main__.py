from src.report.tables import main

main()
