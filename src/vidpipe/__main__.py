from vidpipe.cli.app import main

main()
