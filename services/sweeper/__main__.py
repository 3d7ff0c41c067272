from services.sweeper import main

main()
