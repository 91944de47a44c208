-- depends: 0005_limits_and_usernames
DROP TABLE IF EXISTS pushes;
