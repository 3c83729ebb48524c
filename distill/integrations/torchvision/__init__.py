"""torchvision backend: ViLD RoI heads, model builder and trainer on torchvision's detection parts."""
