using System.Net;
using System.Net.Sockets;
using System.Security.Claims;
using System.Text;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Tests;

public sealed class SecurityTests
{
    private static readonly SymmetricSecurityKey SigningKey = new(Encoding.UTF8.GetBytes("a-test-signing-key-of-at-least-32-bytes!"));

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<KestrelHost> StartAsync(Backend backend, Func<RouteConfig, RouteConfig> route, Action<WebApplicationBuilder>? services = null)
    {
        var (routes, clusters) = Gateways.OneCluster(null, null, (backend, null));
        return await Gateways.FromCodeAsync(
            [route(routes[0])],
            clusters,
            services: b =>
            {
                b.Services.AddAuthentication()
                    .AddJwtBearer(o =>
                    {
                        o.RequireHttpsMetadata = false;
                        o.MapInboundClaims = false;
                        o.TokenValidationParameters = new TokenValidationParameters
                        {
                            ValidateIssuer = false,
                            ValidateAudience = false,
                            IssuerSigningKey = SigningKey,
                        };
                    })
                    .AddApiKeys(o =>
                    {
                        o.Keys["key-alpha"] = "alpha";
                        o.Keys["key-beta"] = "beta";
                    });
                b.Services.AddAuthorization(o =>
                {
                    o.AddPolicy("jwt", p => p.AddAuthenticationSchemes(JwtBearerDefaults.AuthenticationScheme).RequireAuthenticatedUser());
                    o.AddPolicy("apikey", p => p.AddAuthenticationSchemes("ApiKey").RequireAuthenticatedUser());
                });
                b.Services.AddRateLimiter(o =>
                {
                    o.AddPerClientFixedWindow("per-ip", 2, TimeSpan.FromMinutes(1));
                    o.AddPerClientFixedWindow("per-key", 2, TimeSpan.FromMinutes(1), ClientPartition.ApiKey);
                });
                services?.Invoke(b);
            },
            app: a =>
            {
                a.UseAuthentication();
                a.UseAuthorization();
                a.UseRateLimiter();
            });
    }

    [Fact]
    public async Task JwtBearerRoute_NoOrBadToken401_ValidToken200_BackendSeesOnlyAuthorized()
    {
        await using var backend = await Backend.StartAsync("api");
        await using var gateway = await StartAsync(backend, r => r with { AuthorizationPolicy = "jwt" });

        using var anonymous = await gateway.Client.GetAsync("/orders", Ct);
        anonymous.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        using var forged = await Get(gateway, "/orders", ("Authorization", "Bearer " + Token(new SymmetricSecurityKey(Encoding.UTF8.GetBytes("another-key-that-is-also-32-bytes-long")))));
        forged.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        backend.Hits.Should().Be(0);

        using var valid = await Get(gateway, "/orders", ("Authorization", "Bearer " + Token(SigningKey)));
        valid.StatusCode.Should().Be(HttpStatusCode.OK);
        backend.Hits.Should().Be(1);
    }

    [Fact]
    public async Task ApiKeyRoute_UnknownKey401_KnownKey200()
    {
        await using var backend = await Backend.StartAsync("api");
        await using var gateway = await StartAsync(backend, r => r with { AuthorizationPolicy = "apikey" });

        using var none = await gateway.Client.GetAsync("/x", Ct);
        none.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        using var unknown = await Get(gateway, "/x", ("X-Api-Key", "nope"));
        unknown.StatusCode.Should().Be(HttpStatusCode.Unauthorized);
        using var known = await Get(gateway, "/x", ("X-Api-Key", "key-alpha"));
        known.StatusCode.Should().Be(HttpStatusCode.OK);
        backend.Hits.Should().Be(1);
    }

    [Fact]
    public async Task RateLimitPerIp_ThirdRequestInWindow_429WithRetryAfterAndProblem()
    {
        await using var backend = await Backend.StartAsync("api");
        await using var gateway = await StartAsync(backend, r => r with { RateLimiterPolicy = "per-ip" });

        (await gateway.Client.GetAsync("/x", Ct)).StatusCode.Should().Be(HttpStatusCode.OK);
        (await gateway.Client.GetAsync("/x", Ct)).StatusCode.Should().Be(HttpStatusCode.OK);
        using var limited = await gateway.Client.GetAsync("/x", Ct);

        var problem = await ProtocolTranslationTests.ExpectProblem(limited, 429, "Too many requests");
        limited.Headers.RetryAfter!.Delta!.Value.Should().BeGreaterThan(TimeSpan.Zero).And.BeLessThanOrEqualTo(TimeSpan.FromMinutes(1));
        problem.GetProperty("instance").GetString().Should().Be("/x");
        backend.Hits.Should().Be(2);
    }

    [Fact]
    public async Task RateLimitPerApiKey_EachClientHasItsOwnWindow()
    {
        await using var backend = await Backend.StartAsync("api");
        await using var gateway = await StartAsync(backend, r => r with { RateLimiterPolicy = "per-key" });

        var alpha = new List<HttpStatusCode>();
        var beta = new List<HttpStatusCode>();
        for (var i = 0; i < 3; i++)
        {
            using var a = await Get(gateway, "/x", ("X-Api-Key", "key-alpha"));
            alpha.Add(a.StatusCode);
            using var b = await Get(gateway, "/x", ("X-Api-Key", "key-beta"));
            beta.Add(b.StatusCode);
        }

        alpha.Should().Equal(HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests);
        beta.Should().Equal(HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests);
        backend.Hits.Should().Be(4);
    }

    [Fact]
    public async Task OversizeBody_413ProblemAndNeverForwarded()
    {
        await using var backend = await Backend.StartAsync("api");
        await using var gateway = await StartAsync(backend, r => r with { MaxRequestBodySize = 16 });

        using var small = await gateway.Client.PostAsync("/x", new StringContent("tiny"), Ct);
        small.StatusCode.Should().Be(HttpStatusCode.OK);
        using var large = await gateway.Client.PostAsync("/x", new StringContent(new string('z', 17)), Ct);

        await ProtocolTranslationTests.ExpectProblem(large, 413, "The request body is too large");
        backend.Hits.Should().Be(1);
    }

    [Fact]
    public async Task MalformedRequest_400AndNeverForwarded()
    {
        await using var backend = await Backend.StartAsync("api");
        await using var gateway = await StartAsync(backend, r => r);
        var uri = new Uri(gateway.Address);

        var answer = await RawAsync(uri, "GET /x HTTP/1.1\r\nHost: gw\r\nThis is not a header\r\n\r\n");
        var smuggled = await RawAsync(uri, "POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde");

        answer.Should().StartWith("HTTP/1.1 400");
        smuggled.Should().StartWith("HTTP/1.1 400");
        backend.Hits.Should().Be(0);
    }

    [Fact]
    public async Task HopByHopHeaders_NotForwarded()
    {
        await using var backend = await Backend.StartAsync("api");
        await using var gateway = await StartAsync(backend, r => r);

        using var response = await Get(gateway, "/x",
            ("Connection", "X-Internal-Hop"), ("X-Internal-Hop", "secret"), ("Keep-Alive", "timeout=5"), ("Proxy-Authorization", "Basic abc"), ("X-End-To-End", "kept"));

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        var headers = backend.Received.Single().Headers;
        headers.ContainsKey("X-Internal-Hop").Should().BeFalse();
        headers.ContainsKey("Keep-Alive").Should().BeFalse();
        headers.ContainsKey("Proxy-Authorization").Should().BeFalse();
        headers["X-End-To-End"].ToString().Should().Be("kept");
    }

    private static string Token(SecurityKey key) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
    {
        Subject = new ClaimsIdentity([new Claim("sub", "user-1")]),
        Expires = DateTime.UtcNow.AddMinutes(5),
        SigningCredentials = new SigningCredentials(key, SecurityAlgorithms.HmacSha256),
    });

    private static async Task<HttpResponseMessage> Get(KestrelHost gateway, string path, params (string Name, string Value)[] headers)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(path, UriKind.Relative));
        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        return await gateway.Client.SendAsync(request, Ct);
    }

    private static async Task<string> RawAsync(Uri uri, string request)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(uri.Host, uri.Port, Ct);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request), Ct);
        var buffer = new byte[4096];
        var read = await stream.ReadAsync(buffer, Ct);
        return Encoding.ASCII.GetString(buffer, 0, read);
    }
}
