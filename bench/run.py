"""`make bench`: every benchmark in turn."""

from bench import events

if __name__ == "__main__":
    events.main([])
