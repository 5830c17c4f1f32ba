from batchcancel.cli import main

main()
