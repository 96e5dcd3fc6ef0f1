-- Removed environments keep their row (and so their revision: an environment written again
-- continues from it, and no cache ever sees its revision go back). Only adds, so a release
-- without it still runs on a database with it.
ALTER TABLE environments ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
