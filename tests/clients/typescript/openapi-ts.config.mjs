// How the TypeScript client is generated: `npx openapi-ts` with FLOWGATE_OPENAPI naming the
// document (default: the committed one) and FLOWGATE_SDK_OUT the output folder.
export default {
  input: process.env.FLOWGATE_OPENAPI ?? '../../../openapi/flowgate.json',
  output: process.env.FLOWGATE_SDK_OUT ?? 'src/client',
  plugins: ['@hey-api/client-fetch', '@hey-api/sdk', '@hey-api/typescript'],
};
