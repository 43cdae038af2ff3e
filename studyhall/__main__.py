from studyhall.cli import main

main()
