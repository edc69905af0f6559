from cartstream.services.cli import main

main()
