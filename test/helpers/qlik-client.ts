/** The tests' Qlik-engine stand-in: the client `npm run try` uses too, kept in src/cli/. */
export * from '../../src/cli/qlik-client';
