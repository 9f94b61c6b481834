"""Reading users' record files and writing outputs atomically, with FILE:LINE errors."""
