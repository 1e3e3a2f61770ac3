"""What the workers and replicas of one deployment share through Redis."""
