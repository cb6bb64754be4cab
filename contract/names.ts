/**
 * Names that become folder or file names (a model folder, a project, a prompt set): letters, digits, dot, dash
 * and underscore, not starting with a dot, at most 100 characters. Never a path.
 */
export const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$/;

/** The rule in words, for error messages. */
export const SAFE_NAME_RULE = "letters, digits, '.', '-' and '_', not starting with '.' (no paths)";
