"""`python -m selfplay ...`: the `selfplay` command."""

from selfplay.cli import main

if __name__ == "__main__":  # vLLM's engine process re-imports the main module: it must not run the command again
    main()
