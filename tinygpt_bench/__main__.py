from tinygpt_bench.cli import main

main()
