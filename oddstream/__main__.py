from oddstream.cli import main

main()
