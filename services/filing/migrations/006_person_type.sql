-- R4: a retiree_resettled filing is for a retiree, a posted_worker one for an employee in service.
-- Filing keeps each person's type from refdata.persons, to check the category filed against it.
ALTER TABLE persons ADD COLUMN psn_type text;
