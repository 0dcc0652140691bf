/*
 * The planner hook of pg_invariants, in C so that nothing stands between
 * Postgres and its own planner's errors.
 *
 * A hook written in Rust has to call the planner through pgrx's guard,
 * which catches every error the planner raises (constant folding,
 * inlining of SQL functions) and raises it again with only its SQLSTATE,
 * message, DETAIL and HINT. Here the planner is called directly: its errors
 * pass through untouched, with every field. Only the rewrite of soft
 * deletes is Rust (pgi_convert_soft_deletes, entered through pgrx's guard:
 * its own errors are the extension's).
 */
#include "postgres.h"

#include "nodes/params.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "optimizer/planner.h"

/* Rust (src/soft_delete/preload.rs): rewrites the DELETEs of soft-delete
 * tables in the query; true when the query itself was one. */
extern bool pgi_convert_soft_deletes(Query *parse);

static planner_hook_type previous_planner = NULL;

static PlannedStmt *
pgi_planner(Query *parse, const char *query_string, int cursor_options,
			ParamListInfo bound_params)
{
	PlannedStmt *planned;
	bool		converted = false;

	/*
	 * Only a DELETE or an UPDATE, or a WITH query that may hold one, is
	 * Rust's business.
	 */
	if (parse->commandType == CMD_DELETE || parse->commandType == CMD_UPDATE ||
		parse->cteList != NIL)
		converted = pgi_convert_soft_deletes(parse);

	if (previous_planner != NULL)
		planned = previous_planner(parse, query_string, cursor_options, bound_params);
	else
		planned = standard_planner(parse, query_string, cursor_options, bound_params);

	/* The UPDATE keeps the DELETE's command tag and SPI result. */
	if (converted && planned != NULL)
		planned->commandType = CMD_DELETE;
	return planned;
}

/* Called once from _PG_init while the library is preloaded. */
void
pgi_install_planner_hook(void)
{
	previous_planner = planner_hook;
	planner_hook = pgi_planner;
}
