using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Gateway;
using Polly;
using Polly.Retry;
using Yarp.ReverseProxy.Configuration;

namespace GatewaySample;

public sealed record GetQuote(string Symbol);

public sealed record Quote(string Symbol, decimal Price);

public sealed record News(string Text);

/// <summary>What a backend version returns for a catalog item.</summary>
public sealed record CatalogItem(string Version, string? Item);

/// <summary>What a backend version returns for a quote.</summary>
public sealed record BackendQuote(string Symbol, decimal Price, string Version);

/// <summary>
/// Every type the sample reads or writes as JSON, with its code generated at compile time (camelCase, as ASP.NET Core
/// writes by default), so that no JSON goes through reflection (trimming and NativeAOT).
/// </summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(GetQuote))]
[JsonSerializable(typeof(Quote))]
[JsonSerializable(typeof(News))]
[JsonSerializable(typeof(CatalogItem))]
[JsonSerializable(typeof(BackendQuote))]
[JsonSerializable(typeof(JsonElement))]
public sealed partial class SampleJson : JsonSerializerContext;

/// <summary>
/// A gateway in front of two versions of a backend (a 90/10 canary), a route to a request handler, an aggregated
/// BFF route, and a page showing live messages over Server-Sent Events and a WebSocket.
/// </summary>
public sealed class SampleApp : IAsyncDisposable
{
    private readonly List<WebApplication> _apps = [];

    private SampleApp()
    {
    }

    /// <summary>Gets the gateway's address.</summary>
    public string Address { get; private set; } = string.Empty;

    /// <summary>Gets the gateway's services.</summary>
    public IServiceProvider Services { get; private set; } = null!;

    public static async Task<SampleApp> StartAsync(int port = 0)
    {
        var sample = new SampleApp();
        var v1 = await sample.StartBackendAsync("v1");
        var v2 = await sample.StartBackendAsync("v2");

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o => o.Listen(System.Net.IPAddress.Loopback, port));
        builder.AddPatterns(p => p.UseInMemory().UseSystemTextJson(SampleJson.Default));
        builder.AddPubSub();
        builder.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => ValueTask.FromResult(new Quote(q.Symbol, 101.25m))));

        // A request route declared in configuration (appsettings.json in a real app): POST /api/v2/quotes calls the same handler.
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Gateway:Requests:quotes-v2:Path"] = "/api/v2/quotes",
            ["Gateway:Requests:quotes-v2:Request"] = "GetQuote",
            ["Gateway:Requests:quotes-v2:Timeout"] = "00:00:05",
        });
        builder.AddGateway(g => g
            .LoadFromConfig(builder.Configuration.GetSection("Gateway"))
            .AddRequestType<GetQuote, Quote>()

            // A named resilience policy: the catalog route names it in its metadata.
            .AddResiliencePolicy("catalog", p =>
            {
                p.Timeout = TimeSpan.FromSeconds(10);
                p.Retry = new RetryStrategyOptions { MaxRetryAttempts = 1, Delay = TimeSpan.FromMilliseconds(50), BackoffType = DelayBackoffType.Exponential, UseJitter = true };
            }));
        builder.AddGateway(g => g.LoadFromMemory(
            [
                new RouteConfig
                {
                    RouteId = "catalog",
                    ClusterId = "catalog",
                    Match = new RouteMatch { Path = "/catalog/{**rest}" },
                    Metadata = new Dictionary<string, string> { [GatewayMetadata.ResiliencePolicy] = "catalog" },
                },
            ],
            [
                new ClusterConfig
                {
                    ClusterId = "catalog",
                    LoadBalancingPolicy = GatewayPolicies.Weighted,
                    Metadata = new Dictionary<string, string>
                    {
                        [GatewayMetadata.OutlierConsecutiveFailures] = "5",
                    },
                    HealthCheck = new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = GatewayPolicies.OutlierDetection } },
                    Destinations = new Dictionary<string, DestinationConfig>
                    {
                        ["v1"] = new() { Address = v1, Metadata = new Dictionary<string, string> { [GatewayMetadata.Weight] = "90" } },
                        ["v2"] = new() { Address = v2, Metadata = new Dictionary<string, string> { [GatewayMetadata.Weight] = "10" } },
                    },
                },
            ]));
        var app = builder.Build();
        app.UseWebSockets();
        app.MapGet("/", async context =>
        {
            context.Response.ContentType = "text/html; charset=utf-8";
            await using var page = typeof(SampleApp).Assembly.GetManifestResourceStream("index.html")!;
            await page.CopyToAsync(context.Response.Body);
        });
        app.MapRequest<GetQuote, Quote>("/api/quotes");
        app.MapPublish<News>("/api/news", topic: "news");
        app.MapServerSentEvents("/events/news", "news");
        app.MapWebSocketTopics("/ws", ["news"]);
        app.MapAggregate("/bff/home", a => a
            .Leg("catalog", "catalog", "/catalog/featured")
            .Leg("quote", v1, "/quote/ACME", o => o.OnFailure = LegFailurePolicy.Omit));
        app.MapGateway();
        await app.StartAsync();
        sample._apps.Add(app);
        sample.Services = app.Services;
        sample.Address = AddressOf(app);
        return sample;
    }

    private async Task<string> StartBackendAsync(string version)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o => o.Listen(System.Net.IPAddress.Loopback, 0));
        var app = builder.Build();
        app.MapGet("/catalog/{**rest}", (string? rest) => Results.Json(new CatalogItem(version, rest), SampleJson.Default.CatalogItem));
        app.MapGet("/quote/{symbol}", (string symbol) => Results.Json(new BackendQuote(symbol, 99.5m, version), SampleJson.Default.BackendQuote));
        await app.StartAsync();
        _apps.Add(app);
        return AddressOf(app);
    }

    private static string AddressOf(WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

    public async ValueTask DisposeAsync()
    {
        foreach (var app in _apps)
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    internal static string Percent(int part, int total) => (100.0 * part / total).ToString("F0", CultureInfo.InvariantCulture) + "%";
}
