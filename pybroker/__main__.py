from pybroker.cli.main import main

main()
