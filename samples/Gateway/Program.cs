using System.Net.Http.Json;
using System.Text.Json;
using GatewaySample;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway;

// Runs the gateway sample. With --smoke it exercises every route once and exits (CI); otherwise it serves until Ctrl+C.
var smoke = args.Contains("--smoke");
await using var sample = await SampleApp.StartAsync(smoke ? 0 : 5080);
using var client = new HttpClient { BaseAddress = new Uri(sample.Address) };
Console.WriteLine($"Gateway at {sample.Address}");

// The 90/10 canary: 100 requests, split by weight.
var versions = new Dictionary<string, int>();
for (var i = 0; i < 100; i++)
{
    var item = await client.GetFromJsonAsync("/catalog/lamp", SampleJson.Default.JsonElement);
    var version = item.GetProperty("version").GetString()!;
    versions[version] = versions.GetValueOrDefault(version) + 1;
}

Console.WriteLine($"canary split: v1 {versions.GetValueOrDefault("v1")}, v2 {versions.GetValueOrDefault("v2")}");

// Promote the canary to 50/50 without a restart.
sample.Services.GetRequiredService<DestinationWeights>().Set("catalog", new Dictionary<string, int> { ["v1"] = 50, ["v2"] = 50 });

// An HTTP route to a request handler registered with AddRequestResponse.
var quote = await client.PostAsJsonAsync("/api/quotes", new GetQuote("ACME"), SampleJson.Default.GetQuote);
Console.WriteLine($"POST /api/quotes -> {(int)quote.StatusCode} {await quote.Content.ReadAsStringAsync()}");

// The same handler through a request route declared in configuration.
var configured = await client.PostAsJsonAsync("/api/v2/quotes", new GetQuote("ACME"), SampleJson.Default.GetQuote);
Console.WriteLine($"POST /api/v2/quotes -> {(int)configured.StatusCode} {await configured.Content.ReadAsStringAsync()}");

// The BFF route: two legs merged into one JSON object.
Console.WriteLine($"GET /bff/home -> {await client.GetStringAsync("/bff/home")}");

// Live messages: an SSE subscriber receives what is published through POST /api/news.
using var events = await client.GetAsync("/events/news", HttpCompletionOption.ResponseHeadersRead);
using var reader = new StreamReader(await events.Content.ReadAsStreamAsync());
await reader.ReadLineAsync();
await reader.ReadLineAsync();
var published = await client.PostAsJsonAsync("/api/news", new News("gateway sample is live"), SampleJson.Default.News);
Console.WriteLine($"POST /api/news -> {(int)published.StatusCode}");
string? line;
while ((line = await reader.ReadLineAsync()) is not null && !line.StartsWith("data: ", StringComparison.Ordinal))
{
}

Console.WriteLine($"SSE received: {line}");
if (versions.GetValueOrDefault("v1") != 90 || !quote.IsSuccessStatusCode || !configured.IsSuccessStatusCode || line is null)
{
    Console.Error.WriteLine("The sample did not behave as expected.");
    return 1;
}

if (!smoke)
{
    Console.WriteLine($"Open {sample.Address}/ for the live page; POST JSON {{\"text\":\"...\"}} to {sample.Address}/api/news. Ctrl+C stops.");
    var stop = new TaskCompletionSource();
    Console.CancelKeyPress += (_, e) =>
    {
        e.Cancel = true;
        stop.TrySetResult();
    };
    await stop.Task;
}

return 0;
