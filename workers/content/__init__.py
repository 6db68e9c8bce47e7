"""What a chat job carries beyond text: images and documents (their sizes and token estimates),
tools and structured outputs — the features a deployment must have to take the job."""
