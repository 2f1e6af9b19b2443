-- Drill instances of rebuilt users that their history does not produce (a fold bug created them):
-- the (user, instance) pairs the rebuild found stored and not rebuilt, each found by its primary
-- key (the user is checked too: an instance is only ever deleted from the user it was found under).
DELETE FROM drill_instances AS d
USING unnest(%(user_ids)s::uuid[], %(instance_ids)s::uuid[]) AS g(user_id, drill_instance_id)
WHERE d.drill_instance_id = g.drill_instance_id AND d.user_id = g.user_id
