/**
 * Jest for the model and request layers, as the JupyterLab extension template runs it: ts-jest compiles the
 * sources, and @jupyterlab/* (shipped as ES modules) are compiled too. The tests talk to a real HTTP server
 * started in the test process, so the environment is Node's (global fetch), not jsdom.
 */
const esModules = ['@jupyterlab/'].join('|');

module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.spec.ts'],
  moduleFileExtensions: ['ts', 'tsx', 'js', 'json'],
  transform: {
    '^.+\\.(ts|tsx|js)$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  transformIgnorePatterns: [`/node_modules/(?!(${esModules}))`]
};
