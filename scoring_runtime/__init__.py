"""The replica server: runs an Azure ML entry script (init()/run()) behind HTTP."""
