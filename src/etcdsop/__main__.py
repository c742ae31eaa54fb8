from etcdsop.cli import main

main()
