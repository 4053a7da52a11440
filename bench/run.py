"""`make bench`: every benchmark in turn."""

from bench import events, training

if __name__ == "__main__":
    events.main([])
    training.main([])
