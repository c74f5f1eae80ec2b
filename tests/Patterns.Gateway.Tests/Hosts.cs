using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Patterns.Gateway.Tests;

/// <summary>A real Kestrel server on 127.0.0.1 with an ephemeral port.</summary>
internal sealed class KestrelHost : IAsyncDisposable
{
    private KestrelHost(WebApplication app, string address)
    {
        App = app;
        Address = address;
        Client = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(30) };
    }

    public WebApplication App { get; }

    public string Address { get; }

    public HttpClient Client { get; }

    public IServiceProvider Services => App.Services;

    public static async Task<KestrelHost> StartAsync(
        Action<WebApplicationBuilder> configureServices, Action<WebApplication> configureApp, Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols? protocols = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(o => o.Listen(System.Net.IPAddress.Loopback, 0, l => l.Protocols = protocols ?? l.Protocols));
        builder.Logging.ClearProviders();
        if (Environment.GetEnvironmentVariable("PATTERNS_TEST_LOG") == "1")
        {
            builder.Logging.AddSimpleConsole().SetMinimumLevel(LogLevel.Debug);
        }

        configureServices(builder);
        var app = builder.Build();
        configureApp(app);
        await app.StartAsync(TestContext.Current.CancellationToken);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new KestrelHost(app, address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal));
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync(CancellationToken.None);
        await App.DisposeAsync();
    }
}

/// <summary>A backend server that names itself in every answer and counts what it received.</summary>
internal sealed class Backend : IAsyncDisposable
{
    private KestrelHost _host = null!;
    private int _hits;

    private Backend(string name) => Name = name;

    public string Name { get; }

    public string Address => _host.Address;

    public int Hits => Volatile.Read(ref _hits);

    public ConcurrentQueue<(string Method, string Path, string Body, IHeaderDictionary Headers)> Received { get; } = new();

    /// <summary>Decides the answer; by default 200 with the backend's name as the body.</summary>
    public Func<HttpContext, Task>? Behavior { get; set; }

    /// <summary>A behavior answering 200 with <paramref name="json"/>.</summary>
    public static Func<HttpContext, Task> Json(string json) => c =>
    {
        c.Response.ContentType = "application/json";
        return c.Response.WriteAsync(json);
    };

    public static async Task<Backend> StartAsync(string name, Func<HttpContext, Task>? behavior = null, Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols? protocols = null)
    {
        var backend = new Backend(name) { Behavior = behavior };
        backend._host = await KestrelHost.StartAsync(_ => { }, app => app.Run(backend.HandleAsync), protocols);
        return backend;
    }

    private async Task HandleAsync(HttpContext context)
    {
        Interlocked.Increment(ref _hits);
        using var reader = new StreamReader(context.Request.Body);
        var body = await reader.ReadToEndAsync(context.RequestAborted);
        Received.Enqueue((context.Request.Method, context.Request.Path + context.Request.QueryString, body, new HeaderDictionary(context.Request.Headers.ToDictionary(h => h.Key, h => h.Value))));
        context.Response.Headers["X-Backend"] = Name;
        if (Behavior is { } behavior)
        {
            await behavior(context);
            return;
        }

        await context.Response.WriteAsync(Name, context.RequestAborted);
    }

    public ValueTask DisposeAsync() => _host.DisposeAsync();
}
