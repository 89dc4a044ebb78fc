"""Ray Serve: one application graph serving every trained SKR head behind HTTP routes."""
