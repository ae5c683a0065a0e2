"""What a build is: the recipe, the settings, the work-dir layout, shipped files, project init."""
