/** The tests' Qlik-engine stand-in: the client `npm run try` uses too, kept in src/client/. */
export * from '../../src/client/qlik-client';
