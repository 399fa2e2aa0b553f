module wolt-jupyter/pause

go 1.19
