from usagegate.cli import main

main()
