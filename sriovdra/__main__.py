from sriovdra.cli import main

main()
