"""The example shop: products read through cachewise, page views counted with write-back."""
