from wrenchai.cli import main

main()
