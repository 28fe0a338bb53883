"""Points ledger: accounts with expiring lots; the ledger entries are the activities that move points."""
