"""Rating: participant sessions, video/audio minutes, month-to-date usage and cost, threshold events."""
