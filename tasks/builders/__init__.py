"""Builders: each turns an image to build into something the pusher can publish (an OCI layout)."""
