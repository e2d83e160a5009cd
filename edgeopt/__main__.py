from edgeopt.cli.app import main

main()
