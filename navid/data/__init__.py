"""Video data: file I/O, the UCF-101 reader, the synthetic default dataset, DataModules, token caches."""
