from dispatch.cli.entry import main

main()
