from tinygpt_bench.entry import main

main()
