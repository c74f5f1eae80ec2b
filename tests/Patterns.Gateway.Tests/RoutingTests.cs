using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Yarp.ReverseProxy.Transforms;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Tests;

public sealed class RoutingTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task LoadFromConfig_PathHostMethodHeaderQueryCookie_EachRouteReachesItsCluster()
    {
        await using var a = await Backend.StartAsync("a");
        await using var b = await Backend.StartAsync("b");
        await using var c = await Backend.StartAsync("c");
        await using var d = await Backend.StartAsync("d");
        await using var e = await Backend.StartAsync("e");
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:header:ClusterId"] = "b",
            ["Routes:header:Order"] = "1",
            ["Routes:header:Match:Path"] = "/api/{**rest}",
            ["Routes:header:Match:Headers:0:Name"] = "X-Version",
            ["Routes:header:Match:Headers:0:Values:0"] = "2",
            ["Routes:query:ClusterId"] = "c",
            ["Routes:query:Order"] = "2",
            ["Routes:query:Match:Path"] = "/api/{**rest}",
            ["Routes:query:Match:QueryParameters:0:Name"] = "beta",
            ["Routes:query:Match:QueryParameters:0:Values:0"] = "yes",
            ["Routes:cookie:ClusterId"] = "d",
            ["Routes:cookie:Order"] = "3",
            ["Routes:cookie:Match:Path"] = "/api/{**rest}",
            ["Routes:cookie:Match:Headers:0:Name"] = "Cookie",
            ["Routes:cookie:Match:Headers:0:Values:0"] = "ring=canary",
            ["Routes:cookie:Match:Headers:0:Mode"] = "Contains",
            ["Routes:delete:ClusterId"] = "e",
            ["Routes:delete:Order"] = "4",
            ["Routes:delete:Match:Path"] = "/api/{**rest}",
            ["Routes:delete:Match:Methods:0"] = "DELETE",
            ["Routes:host:ClusterId"] = "e",
            ["Routes:host:Match:Hosts:0"] = "legacy.example",
            ["Routes:host:Match:Path"] = "{**rest}",
            ["Routes:default:ClusterId"] = "a",
            ["Routes:default:Order"] = "10",
            ["Routes:default:Match:Path"] = "/api/{**rest}",
            ["Clusters:a:Destinations:d1:Address"] = a.Address,
            ["Clusters:b:Destinations:d1:Address"] = b.Address,
            ["Clusters:c:Destinations:d1:Address"] = c.Address,
            ["Clusters:d:Destinations:d1:Address"] = d.Address,
            ["Clusters:e:Destinations:d1:Address"] = e.Address,
        }).Build();
        await using var gateway = await Gateways.FromConfigAsync(config);

        (await Send(gateway.Client, HttpMethod.Get, "/api/x")).Should().Be("a");
        (await Send(gateway.Client, HttpMethod.Get, "/api/x", ("X-Version", "2"))).Should().Be("b");
        (await Send(gateway.Client, HttpMethod.Get, "/api/x?beta=yes")).Should().Be("c");
        (await Send(gateway.Client, HttpMethod.Get, "/api/x", ("Cookie", "ring=canary"))).Should().Be("d");
        (await Send(gateway.Client, HttpMethod.Delete, "/api/x")).Should().Be("e");
        (await Send(gateway.Client, HttpMethod.Get, "/other", ("Host", "legacy.example"))).Should().Be("e");
        using var missing = await gateway.Client.GetAsync("/nothing", Ct);
        missing.StatusCode.Should().Be(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task LoadFromConfig_Transforms_BackendSeesRewrittenPathAndAddedHeader()
    {
        await using var a = await Backend.StartAsync("a");
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "a",
            ["Routes:r:Match:Path"] = "/shop/{**rest}",
            ["Routes:r:Transforms:0:PathRemovePrefix"] = "/shop",
            ["Routes:r:Transforms:1:RequestHeader"] = "X-Gateway",
            ["Routes:r:Transforms:1:Set"] = "patterns",
            ["Routes:r:Transforms:2:ResponseHeader"] = "X-Served-By",
            ["Routes:r:Transforms:2:Set"] = "gateway",
            ["Clusters:a:Destinations:d1:Address"] = a.Address,
        }).Build();
        await using var gateway = await Gateways.FromConfigAsync(config);

        using var response = await gateway.Client.GetAsync("/shop/items/7?x=1", Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        response.Headers.GetValues("X-Served-By").Should().Equal("gateway");
        a.Received.Should().ContainSingle();
        a.Received.Single().Path.Should().Be("/items/7?x=1");
        a.Received.Single().Headers["X-Gateway"].ToString().Should().Be("patterns");
    }

    [Fact]
    public async Task AddTransforms_FromCode_AppliesToEveryRoute()
    {
        await using var a = await Backend.StartAsync("a");
        var (routes, clusters) = Gateways.OneCluster(null, null, (a, null));
        await using var gateway = await KestrelHost.StartAsync(
            b => b.AddGateway(g => g.LoadFromMemory(routes, clusters).AddTransforms(t => t.AddRequestTransform(r =>
            {
                r.ProxyRequest.Headers.Add("X-From-Code", "yes");
                return default;
            }))),
            app => app.MapGateway());

        (await Send(gateway.Client, HttpMethod.Get, "/p")).Should().Be("a");

        a.Received.Single().Headers["X-From-Code"].ToString().Should().Be("yes");
    }

    [Fact]
    public async Task LoadFromConfig_ConfigurationReloaded_NewClusterServesWithoutRestart()
    {
        await using var legacy = await Backend.StartAsync("legacy");
        await using var modern = await Backend.StartAsync("modern");
        var source = new Dictionary<string, string?>
        {
            ["Routes:orders:ClusterId"] = "legacy",
            ["Routes:orders:Match:Path"] = "/orders/{**rest}",
            ["Clusters:legacy:Destinations:d1:Address"] = legacy.Address,
            ["Clusters:modern:Destinations:d1:Address"] = modern.Address,
        };
        var config = new ConfigurationBuilder().AddInMemoryCollection(source).Build();
        await using var gateway = await Gateways.FromConfigAsync(config);
        (await Send(gateway.Client, HttpMethod.Get, "/orders/1")).Should().Be("legacy");

        // Strangler fig: the orders prefix moves to the new cluster by a configuration change alone.
        config["Routes:orders:ClusterId"] = "modern";
        config.Reload();

        await Gateways.EventuallyAsync(gateway.Client, "/orders/1", body => body == "modern");
        (await Send(gateway.Client, HttpMethod.Get, "/orders/2")).Should().Be("modern");
    }

    [Fact]
    public async Task LoadFromConfig_ReloadWithInvalidMetadata_KeepsLastGoodConfiguration()
    {
        await using var a = await Backend.StartAsync("a");
        await using var b = await Backend.StartAsync("b");
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Clusters:c:LoadBalancingPolicy"] = "Weighted",
            ["Clusters:c:Destinations:a:Address"] = a.Address,
            ["Clusters:c:Destinations:a:Metadata:Weight"] = "1",
            ["Clusters:c:Destinations:b:Address"] = b.Address,
            ["Clusters:c:Destinations:b:Metadata:Weight"] = "0",
        }).Build();
        await using var gateway = await Gateways.FromConfigAsync(config);
        var proxy = gateway.Services.GetRequiredService<Yarp.ReverseProxy.IProxyStateLookup>();

        config["Clusters:c:Destinations:b:Metadata:Weight"] = "-5";
        config["Clusters:c:Metadata:Patterns.Retry.MaxRetries"] = "many";
        config.Reload();

        for (var i = 0; i < 20; i++)
        {
            (await Send(gateway.Client, HttpMethod.Get, "/x")).Should().Be("a");
        }

        proxy.TryGetCluster("c", out var cluster).Should().BeTrue();
        cluster!.Model.Config.Destinations!["b"].Metadata!["Weight"].Should().Be("0");
    }

    [Fact]
    public async Task StartAsync_InvalidMetadata_FailsNamingClusterAndKey()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Clusters:c:Metadata:Patterns.Outlier.ConsecutiveFailures"] = "0",
            ["Clusters:c:Metadata:Patterns.RoutingKey"] = "body:x",
            ["Clusters:c:Destinations:a:Address"] = "http://127.0.0.1:1",
        }).Build();

        var start = () => Gateways.FromConfigAsync(config);

        var error = await start.Should().ThrowAsync<Exception>();
        var message = error.Which.ToString();
        message.Should().Contain("Cluster 'c': Metadata 'Patterns.Outlier.ConsecutiveFailures' is '0'");
        message.Should().Contain("Metadata 'Patterns.RoutingKey' is 'body:x'");
    }

    [Fact]
    public async Task LoadFromMemory_ProviderUpdated_RoutesChangeWithoutRestart()
    {
        await using var a = await Backend.StartAsync("a");
        await using var b = await Backend.StartAsync("b");
        var (routes, clusters) = Gateways.OneCluster(null, null, (a, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);
        (await Send(gateway.Client, HttpMethod.Get, "/x")).Should().Be("a");

        var (routes2, clusters2) = Gateways.OneCluster(null, null, (b, null));
        gateway.Services.GetRequiredService<InMemoryConfigProvider>().Update(routes2, clusters2);

        await Gateways.EventuallyAsync(gateway.Client, "/x", body => body == "b");
    }

    internal static async Task<string> Send(HttpClient client, HttpMethod method, string path, params (string Name, string Value)[] headers)
    {
        using var request = new HttpRequestMessage(method, new Uri(path, UriKind.Relative));
        foreach (var (name, value) in headers)
        {
            if (name == "Host")
            {
                request.Headers.Host = value;
            }
            else
            {
                request.Headers.TryAddWithoutValidation(name, value);
            }
        }

        using var response = await client.SendAsync(request, Ct);
        return await response.Content.ReadAsStringAsync(Ct);
    }
}
