from cartstream.services.cli.main import main

main()
