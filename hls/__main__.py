from hls.cli import main

main()
